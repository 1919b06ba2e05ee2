"""Setting up ipyparallel clusters for epyclab (profiles, workers, controller and engines)."""
