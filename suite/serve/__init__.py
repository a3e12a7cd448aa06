"""``effbench serve``: an OpenAI-compatible HTTP server over the reference engine.

``techniques`` turns ``--technique NAME[:k=v,...]`` into the engine's parts, ``engine_loop``
runs the engine on a background thread that requests join while it runs, ``text`` holds the
chat template and the incremental detokenizer, ``app`` the FastAPI routes and schemas, and
``main`` loads the model and starts uvicorn. docs/SERVING.md describes the API subset.
"""
