"""Example tools (`examples.tools`) and flows (`examples/*.yaml`) for dagrelay."""
