// Prints the one closing line CI reads ("tests: N passed, N failed, N skipped") from Vitest's
// JSON report.
import { readFileSync } from 'node:fs';

interface VitestReport {
  numPassedTests: number;
  numFailedTests: number;
  numPendingTests: number;
  numTodoTests: number;
  numFailedTestSuites: number;
}

const file = process.argv[2] ?? '.state/vitest.json';
let report: VitestReport;
try {
  report = JSON.parse(readFileSync(file, 'utf8')) as VitestReport;
} catch {
  console.log('tests: 0 passed, 1 failed (no test report was written)');
  process.exit(1);
}
const failed = report.numFailedTests + report.numFailedTestSuites;
const skipped = report.numPendingTests + report.numTodoTests;
console.log(`tests: ${report.numPassedTests} passed, ${failed} failed, ${skipped} skipped`);
