"""The studio: teaching the device from the live source in a web page (``clipfsar studio``).

Owns the live session (one classifier streaming one source, the annotated picture, the decision feed), recording
clips from it, the teaching actions on the bundle (enrol, add shots, add by name, remove, rename, threshold) done
through the teaching layer's own code, and the HTTP API and page (Starlette + uvicorn, the ``studio`` extra; the
page is plain HTML/JS/CSS in ``static/``, no build step).

May import: base, video, bundle, engines, teaching, classify (and serving, which it does not need). Never torch.
"""
