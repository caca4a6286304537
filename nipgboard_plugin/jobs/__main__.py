"""``python -m nipgboard_plugin.jobs --worker``: the same as ``python -m nipgboard_plugin.jobs.worker``."""
from .worker import main

if __name__ == "__main__":
    main()
