"""Labs: where experiments run (here, on local engines, or on a cluster)."""
