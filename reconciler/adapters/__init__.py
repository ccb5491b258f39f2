"""EDGE. Thin adapters to the outside: Docker, the proxy admin API, git, files, the lock."""
