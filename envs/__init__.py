"""Environment adapters (gymnax, gymnasium, POMDP wrappers) and the task registry.

Installed as ``rtrrl.envs``. Nothing lives here yet: the adapters and the task registry
arrive with the training-loop work.
"""
