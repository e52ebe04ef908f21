"""`scratchgpt explore`: a local page that shows what a model predicts and where it attends.

`trace` turns a prompt and its continuation into plain data (each token's probability, the
candidates the model weighed, each head's attention); `server` streams that data to the page
(`page.html`, one self-contained file) over the standard library's HTTP server.
"""
