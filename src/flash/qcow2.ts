/**
 * qcow2 needs random access, so it is not streamed: `qemu-img convert` reads the local file and
 * writes the target itself. qemu-img only writes allocated clusters and uses write-zeroes for
 * the rest of a device it does not know to be zeroed, so the result reads back exactly as the
 * image. Its `-p` output ("(12.34/100%)") feeds the progress model.
 */
import { spawn } from 'node:child_process';
import { resolve } from 'node:path';
import { BtyError } from '../core/errors.ts';

export interface QemuRunOptions {
  signal?: AbortSignal;
  /** Fraction 0..1 as qemu-img reports it. */
  onFraction?: (fraction: number) => void;
}

function runQemuImg(args: string[], what: string, options: QemuRunOptions): Promise<string> {
  return new Promise((resolve, reject) => {
    const child = spawn('qemu-img', args, { stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    const onAbort = () => child.kill('SIGTERM');
    options.signal?.addEventListener('abort', onAbort, { once: true });
    child.stdout.setEncoding('utf8');
    child.stderr.setEncoding('utf8');
    child.stdout.on('data', (d: string) => {
      stdout = (stdout + d).slice(-65536);
      const all = [...d.matchAll(/\((\d+(?:\.\d+)?)\/100%\)/g)];
      const last = all[all.length - 1];
      if (last) options.onFraction?.(Number(last[1]) / 100);
    });
    child.stderr.on('data', (d: string) => (stderr = (stderr + d).slice(-8192)));
    child.on('error', (err: NodeJS.ErrnoException) => {
      options.signal?.removeEventListener('abort', onAbort);
      reject(
        err.code === 'ENOENT'
          ? new BtyError(
              'BTY_ERR_TOOL_MISSING',
              'qemu-img is not installed (Debian package qemu-utils)',
            )
          : new BtyError('BTY_ERR_TOOL_FAILED', `could not run qemu-img: ${err.message}`),
      );
    });
    child.on('close', (code, signal) => {
      options.signal?.removeEventListener('abort', onAbort);
      if (options.signal?.aborted) return reject(new Error('cancelled'));
      if (code === 0) return resolve(stdout);
      const status = signal ? `signal ${signal}` : `status ${code}`;
      const detail = stderr.trim() || stdout.trim() || 'no error output';
      reject(
        Object.assign(new Error(`${what}: qemu-img exited with ${status}: ${detail}`), { code }),
      );
    });
  });
}

/** Writes the qcow2 image's virtual disk onto `target` (a block device or a file). */
export async function convertQcow2(
  image: string,
  target: string,
  targetIsBlockDevice: boolean,
  options: QemuRunOptions = {},
): Promise<void> {
  // -n: the device exists and must not be re-created; for a file, qemu-img makes a sparse one.
  const args = ['convert', '-p', '-f', 'qcow2', '-O', 'raw'];
  if (targetIsBlockDevice) args.push('-n');
  // Absolute paths: qemu reads "name:rest" as a protocol and "-x" as an option.
  args.push(resolve(image), resolve(target));
  try {
    await runQemuImg(args, `converting ${image} onto ${target}`, options);
  } catch (err) {
    if (err instanceof BtyError || options.signal?.aborted) throw err;
    throw new BtyError('BTY_ERR_WRITE', (err as Error).message);
  }
}

/**
 * Compares the target's first `virtualSize` bytes with the image's virtual disk. A device is
 * usually larger than the image, so the target is opened through a size-limited raw view.
 */
export async function compareQcow2(
  image: string,
  target: string,
  targetIsBlockDevice: boolean,
  virtualSize: number,
  options: QemuRunOptions = {},
): Promise<void> {
  const view = JSON.stringify({
    driver: 'raw',
    size: virtualSize,
    file: { driver: targetIsBlockDevice ? 'host_device' : 'file', filename: resolve(target) },
  });
  try {
    await runQemuImg(
      ['compare', '-p', '-f', 'qcow2', resolve(image), `json:${view}`],
      `comparing ${target} with ${image}`,
      options,
    );
  } catch (err) {
    if (err instanceof BtyError || options.signal?.aborted) throw err;
    // qemu-img compare exits 1 for "images differ", 2+ for errors.
    const differ = (err as { code?: number }).code === 1;
    throw new BtyError(
      differ ? 'BTY_ERR_VERIFY_MISMATCH' : 'BTY_ERR_TOOL_FAILED',
      differ
        ? `read-back of ${target} does not match the qcow2 image ${image}; the target holds unverified data`
        : (err as Error).message,
    );
  }
}
