import { defineConfig } from 'vitest/config';

// Loop devices and child processes are shared machine state: run test files one at a time
// so two files never race for the same loop device or saturate the two cores.
export default defineConfig({
  test: {
    include: ['test/**/*.test.{ts,tsx}'],
    fileParallelism: false,
    testTimeout: 120_000,
    hookTimeout: 120_000,
    reporters: ['default'],
  },
});
