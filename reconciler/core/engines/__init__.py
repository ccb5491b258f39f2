"""PURE. The engines lbrec deploys on, one module each: what an engine decides (its rules).

``compose.py`` (containers on one Docker engine, docker-compose.yml) and ``swarm.py`` (one Swarm
service per backend version, a stack file). Each module's ``RULES`` implements
``core.ports.EngineRules``; ``auto.py`` chooses one by the desired state's ``engine:``. The
edge of each engine (making and unmaking instances) is its adapter, in
``adapters/engines/<name>.py``, chosen by ``adapters/engines/auto.py``. Nothing outside these
two folders asks which engine it is.
"""
