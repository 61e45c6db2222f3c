// A small reader for this server's OpenAPI document: every operation with its parameters and responses.
"use strict";

function el(tag, text, cls) {
  const node = document.createElement(tag);
  if (text !== undefined) node.textContent = text;
  if (cls) node.className = cls;
  return node;
}

function typeOf(schema) {
  if (!schema) return "";
  if (schema.$ref) return schema.$ref.split("/").pop();
  if (schema.anyOf) return schema.anyOf.map(typeOf).join(" | ");
  if (schema.enum) return schema.enum.join(" | ");
  if (schema.type === "array") return `${typeOf(schema.items)}[]`;
  return schema.format ? `${schema.type} (${schema.format})` : schema.type || "";
}

function render(spec, root) {
  root.textContent = "";
  for (const [path, operations] of Object.entries(spec.paths)) {
    for (const [method, op] of Object.entries(operations)) {
      const section = el("section", undefined, "operation");
      const head = el("h2");
      head.append(el("span", method.toUpperCase(), `method ${method}`), " ", el("code", path));
      section.append(head, el("p", op.description || op.summary || ""));
      if (op.parameters && op.parameters.length) {
        const table = el("table", undefined, "params");
        const header = el("tr");
        ["name", "in", "type", "required", "description"].forEach((h) => header.append(el("th", h)));
        table.append(header);
        for (const p of op.parameters) {
          const row = el("tr");
          [p.name, p.in, typeOf(p.schema), p.required ? "yes" : "", p.description || (p.schema || {}).description || ""]
            .forEach((v) => row.append(el("td", v)));
          table.append(row);
        }
        section.append(table);
      }
      const body = op.requestBody && op.requestBody.content && op.requestBody.content["application/json"];
      if (body) section.append(el("p", `JSON body: ${typeOf(body.schema)}`));
      const answers = Object.entries(op.responses || {}).map(([code, r]) => {
        const json = r.content && r.content["application/json"];
        return `${code}${json ? ` ${typeOf(json.schema)}` : ""}`;
      });
      section.append(el("p", `Responses: ${answers.join(", ")}`));
      root.append(section);
    }
  }
  const schemas = (spec.components && spec.components.schemas) || {};
  root.append(el("h2", "Schemas"));
  for (const [name, schema] of Object.entries(schemas)) {
    const section = el("section", undefined, "schema");
    section.append(el("h3", name));
    const list = el("ul");
    for (const [field, s] of Object.entries(schema.properties || {})) {
      list.append(el("li", `${field}: ${typeOf(s)}${s.description ? ` (${s.description})` : ""}`));
    }
    section.append(list);
    root.append(section);
  }
}

document.addEventListener("DOMContentLoaded", () => {
  const root = document.getElementById("api-docs");
  fetch(root.dataset.spec, { credentials: "same-origin" })
    .then((response) => response.json())
    .then((spec) => render(spec, root))
    .catch((error) => { root.textContent = `Could not load the API description: ${error}`; });
});
