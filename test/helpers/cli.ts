/** Runs `bty` in-process, as the CLI tests need it: a CliIO that captures what is printed. */
import { main } from '../../src/cli/main.ts';
import type { CliIO } from '../../src/cli/output.ts';

export type CapturedIO = CliIO & { stdout: () => string; stderr: () => string };

export function capture(): CapturedIO {
  let out = '';
  let err = '';
  return {
    out: (text) => {
      out += text;
    },
    err: (text) => {
      err += text;
    },
    isTTY: false,
    stdout: () => out,
    stderr: () => err,
  };
}

/** `bty ARGS…` with no terminal; returns the exit code and both output streams. */
export async function runBty(
  ...args: string[]
): Promise<{ code: number; stdout: string; stderr: string }> {
  const io = capture();
  const code = await main(args, io);
  return { code, stdout: io.stdout(), stderr: io.stderr() };
}
