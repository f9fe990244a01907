"""The config file: named destinations and backup plans in TOML.

``load_config()`` checks the whole file up front and reports any mistake as one line,
``file:line: key: reason``; secrets stay references until a store or repository is opened.
The reference of every key is docs/config.md.
"""

from multibackup.config.loader import find_config, load_config
from multibackup.config.model import (
    Config,
    Defaults,
    Destination,
    Plan,
    describe_plans,
    policy_to_dict,
)
from multibackup.config.schedule import Schedule, parse_schedule
from multibackup.config.secret import ResolvedCredentials, SecretRef

__all__ = ["Config", "Defaults", "Destination", "Plan", "ResolvedCredentials", "Schedule",
           "SecretRef", "describe_plans", "find_config", "load_config", "parse_schedule",
           "policy_to_dict"]
