"""Task ``toy``: two Gaussian blobs per hospital, a logistic regression. A throwaway plug-in.

Importing this package registers the task (what ``base.plugins: [tests.plugins.toy]`` does):
the one registration line a task outside ``privfed`` needs.
"""

from privfed.tasks import TaskEntry, register_task

ENTRY = register_task(
    TaskEntry("toy", "tests.plugins.toy.task:ToyTask", "tests.plugins.toy.settings:SETTINGS")
)
