"""Serving: the latest feature values, in-process (get_online_features) or over HTTP."""
