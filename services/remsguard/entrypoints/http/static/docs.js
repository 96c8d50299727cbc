// remsguard API docs: Swagger UI over this server's OpenAPI document (no inline script: CSP).
"use strict";
window.ui = SwaggerUIBundle({
  url: "/openapi.json",
  dom_id: "#swagger-ui",
  deepLinking: true,
  layout: "BaseLayout",
  validatorUrl: null,
});
