"""The controller's HTTP face (`serve --http-port`): /api/v1 as JSON, problem documents for errors, Server-Sent
Events for live job events, an OpenAPI 3.1 document derived from these modules. It calls the same core and
operations as the gRPC face (docs/architecture.md, "The HTTP API"); nothing else imports it at module level."""
