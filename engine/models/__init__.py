"""Model management: find Flux weights, load them once, keep them warm, store them in fp8.

manager.ModelManager is the entry point. resolve/locate/locate_text find files (headers
only), detect recognises them, loaders read them, precision sets storage and compute dtypes,
tiny/tiny_text/tiny_export build the tiny random stand-ins used by tests and the demo.
"""
