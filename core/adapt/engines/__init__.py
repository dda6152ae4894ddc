"""The core's training engine (the HF Trainer), registered by :mod:`adapt.builtins` and imported
only when a run uses it."""
