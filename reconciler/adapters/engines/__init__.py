"""EDGE. The engines' adapters, one module each (the only importers of python-on-whales):
``compose.py`` (ComposeDocker) and ``swarm.py`` (SwarmDocker), each a ``core.ports.DockerPort``
for the rules of the module of the same name in ``core/engines/``; ``auto.py`` chooses one."""
