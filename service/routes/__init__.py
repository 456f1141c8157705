"""HTTP routers (thin: parse, authorize, call a service function, shape the response)."""
