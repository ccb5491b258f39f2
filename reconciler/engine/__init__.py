"""The executor: carries out a plan through the ports, start first and break last."""
