"""Plain nn.Modules: they know nothing of noise schedules, adversaries or losses."""
