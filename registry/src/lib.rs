//! The `valv` registry (HTTP server, routes, config, CLI). To be built in issue 3.
