"""Derived figures: statistics over repeats, groups, the input-bound verdict, the equivalence
check, the summary. Reads runs; never runs anything or renders a page."""
