"""Plans: running a configured backup plan and keeping its history."""
