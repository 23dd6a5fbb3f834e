"""Task plug-ins defined outside ``privfed``: they prove a task is one folder + one registration."""
