"""Adopting the feature store in an existing dbt project: ``python -m sync init`` and ``doctor``.

``init`` (init.py) adds what a project needs, ``doctor`` (doctor.py) says what is missing;
both read the project through requirements.py, so they agree on what "ready" means. Files
are edited with ruamel.yaml (yamledit.py), which keeps the user's comments and key order.
docs/adopting.md is the user's guide.
"""
