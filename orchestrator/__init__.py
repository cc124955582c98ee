"""Host side of dlbench: suites, images, data, backends, results, report.

Never imports a deep-learning framework; talks to Docker only through the docker SDK.
"""
