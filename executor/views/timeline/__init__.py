"""The timeline of a run: `layout` places its bars, `chart` draws them, `page` wraps them."""
