"""In-container side of dlbench: a shared harness plus one small file per framework/API.

Imports numpy and (lazily) the one framework a run asks for; never docker.
"""
