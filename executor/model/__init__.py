"""The flow model: tools, flows, references, conditions, the graph, validation and files.

Nothing here runs anything; everything else builds on it.
"""
