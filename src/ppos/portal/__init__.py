"""The administrative dashboard portal: the control plane seen and steered from a browser.

An ASGI app (Starlette, server-rendered Jinja2 pages, live parts by server-sent
events) that talks to the services only through their gRPC contracts and the client
library. `ppos-portal` runs it alone; `ppos.portal.app.start_portal` runs it inside
another program's event loop (the demo, the tests).
"""
