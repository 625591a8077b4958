"""Agents and who may act on them: the agent record the platform registers, the caller a
verified JWT names, and the tenant check every route makes before anything else."""
