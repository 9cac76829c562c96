"""Training: one loop for every trunk x method x dataset, single process or DistributedDataParallel."""
