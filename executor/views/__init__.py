"""Pictures and text of flows and runs: graphs, the step table, the timeline."""
