"""The wire contract: pydantic models of inbound events and outbound decisions.

`decode.decode_event` turns raw JSON into a domain event or a `Rejection`; `outbound` renders
alerts, audit records and rejections; `schemas` exports JSON Schema files from the models.
The domain core never imports this package.
"""
