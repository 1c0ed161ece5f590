"""The methods' params classes (their config schemas), torch-free: ``<name>_params.py`` per method declares its params
class and ``SPEC`` (methods/registry.py finds them); ``fields.py`` and ``schedule.py`` hold what they share.
"""
