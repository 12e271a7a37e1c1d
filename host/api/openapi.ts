// The OpenAPI 3 document, made from the route table and the schemas, so it
// describes exactly what the server serves (GET /v1/openapi.json).
import { AGENT_VERSION } from "../../agent/version.js";
import { routes } from "./routes.js";
import { schemas } from "./schemas.js";

const errorRef = { $ref: "#/components/schemas/Error" };

export function openApiDocument(): Record<string, unknown> {
  const paths: Record<string, Record<string, unknown>> = {};
  for (const r of routes) {
    const params = [
      ...[...r.path.matchAll(/\{(\w+)\}/g)].map((m) => ({ name: m[1], in: "path", required: true, schema: { type: "string" } })),
      ...(r.query ?? []).map((q) => ({ name: q.name, in: "query", required: false, schema: q.schema, description: q.description })),
    ];
    const responses: Record<string, unknown> = {};
    for (const [status, what] of Object.entries(r.responses)) {
      if (what === "") responses[status] = { description: "no content" };
      else if (typeof what === "string") responses[status] = { description: what === "Error" ? "an error, with a stable code" : what, content: { "application/json": { schema: { $ref: `#/components/schemas/${what}` } } } };
      else responses[status] = { description: what.description, ...(what.media === "websocket" ? {} : { content: { [what.media]: { schema: { type: "string" } } } }) };
    }
    responses["401"] ??= { description: "no or a wrong token", content: { "application/json": { schema: errorRef } } };
    responses["403"] ??= { description: "a request from a page of another origin", content: { "application/json": { schema: errorRef } } };
    paths[r.path] ??= {};
    paths[r.path]![r.method.toLowerCase()] = {
      operationId: r.operationId,
      summary: r.summary,
      ...(params.length > 0 ? { parameters: params } : {}),
      ...(r.body ? { requestBody: { required: true, content: { "application/json": { schema: { $ref: `#/components/schemas/${r.body}` } } } } } : {}),
      responses,
    };
  }
  paths["/v1/openapi.json"] = { get: { operationId: "openapi", summary: "This document", responses: { 200: { description: "OpenAPI 3 document", content: { "application/json": { schema: { type: "object" } } } } } } };
  return {
    openapi: "3.0.3",
    info: { title: "fractal", version: AGENT_VERSION, description: "VMs, images, containers and processes of fractal, over HTTP. Every request needs `Authorization: Bearer TOKEN` (printed by `fractal-host serve`), or the console's session cookie." },
    servers: [{ url: "/" }],
    security: [{ bearer: [] }],
    paths,
    components: { schemas, securitySchemes: { bearer: { type: "http", scheme: "bearer" } } },
  };
}
