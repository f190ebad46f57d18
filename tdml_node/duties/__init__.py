"""The node's work duties: training, checking and judging, behind one face (``Duties``).

They see the node only through the narrow collaborators of ``DutyContext``.
"""

from tdml_node.duties.context import DutyContext, DutyExecutor
from tdml_node.duties.duties import Duties
from tdml_node.duties.standin import standin_due

__all__ = ["Duties", "DutyContext", "DutyExecutor", "standin_due"]
