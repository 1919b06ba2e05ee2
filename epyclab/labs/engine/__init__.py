"""The engine side: what runs on a worker and what travels to it.

``worker`` (the functions that run points, everywhere), ``capture`` (a run's
output), ``packaging`` (an experiment as bytes: cloudpickle, the user's
modules by reference with their source), ``processbound`` (attributes that
must not travel), ``wire`` (packaging, shipping and decoding for ipyparallel
engines and every other transport).
"""
