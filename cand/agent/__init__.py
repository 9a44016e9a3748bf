"""The metric agent (D-MA): what a service imports to report its load to cand."""

from cand.agent.agent import MetricAgent
from cand.agent.collect import CgroupCollector, ProcessCollector
from cand.agent.sync import SyncMetricAgent

__all__ = ["CgroupCollector", "MetricAgent", "ProcessCollector", "SyncMetricAgent"]
