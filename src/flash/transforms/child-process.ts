/**
 * An external program as a stream stage (xz and bzip2, which Node's zlib lacks): bytes go to
 * its stdin, its stdout flows on, and the stage fails unless the program exits 0. Destroying
 * the stage (cancel, an error elsewhere in the pipeline) kills the program.
 */
import { spawn } from 'node:child_process';
import { Duplex } from 'node:stream';
import { BtyError } from '../../core/errors.ts';

export interface ProgramStageOptions {
  /** Debian package to name when the program is missing. */
  debianPackage: string;
  /** Builds the error for a non-zero exit from the program's stderr. */
  onFailure: (exit: string, stderr: string) => BtyError;
}

const STDERR_KEEP = 4096;

export function programStage(
  command: string,
  args: string[],
  options: ProgramStageOptions,
): Duplex {
  const child = spawn(command, args, { stdio: ['pipe', 'pipe', 'pipe'] });
  let stderr = '';
  child.stderr.setEncoding('utf8');
  child.stderr.on('data', (d: string) => {
    stderr = (stderr + d).slice(-STDERR_KEEP);
  });

  const exited = new Promise<BtyError | null>((resolve) => {
    child.on('error', (err: NodeJS.ErrnoException) => {
      resolve(
        err.code === 'ENOENT'
          ? new BtyError(
              'BTY_ERR_TOOL_MISSING',
              `${command} is not installed (Debian package ${options.debianPackage})`,
              { hint: `apt-get install ${options.debianPackage}` },
            )
          : new BtyError('BTY_ERR_TOOL_FAILED', `could not run ${command}: ${err.message}`),
      );
    });
    child.on('close', (code, signal) => {
      if (code === 0) resolve(null);
      else
        resolve(options.onFailure(signal ? `signal ${signal}` : `status ${code}`, stderr.trim()));
    });
  });

  // A downstream consumer that stops early must not leave the program blocked on a full pipe.
  child.stdin.on('error', () => {});

  const stage = Duplex.from({ writable: child.stdin, readable: readAll() });
  async function* readAll(): AsyncGenerator<Buffer> {
    for await (const chunk of child.stdout as AsyncIterable<Buffer>) yield chunk;
    const failure = await exited;
    if (failure) throw failure;
  }
  // If the program dies early (bad data), stdin writes fail with EPIPE: surface the real error.
  void exited.then((failure) => {
    if (failure && !stage.destroyed) stage.destroy(failure);
  });
  stage.on('close', () => {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
  });
  return stage;
}
