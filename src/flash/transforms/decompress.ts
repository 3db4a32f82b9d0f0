/**
 * The stream decompression stage for an image: gzip in-process (Node's zlib), zstd, xz and
 * bzip2 through their programs. Corrupt or truncated input fails with BTY_ERR_DECOMPRESS.
 *
 * gzip and zstd normally skip this stage and decode straight into the sink (decode-into.ts);
 * this is their fallback when Node's zlib internals are not as expected.
 */
import type { Duplex } from 'node:stream';
import zlib from 'node:zlib';
import { BtyError } from '../../core/errors.ts';
import type { ImageFormat } from '../../core/formats.ts';
import { programStage } from './child-process.ts';
import { ZSTD_WINDOW_LOG_MAX } from './decode-into.ts';

/**
 * Output chunk size of the zlib stages: big chunks mean fewer callbacks and larger writes, and
 * zlib allocates a fresh buffer per chunk, which costs page faults at every size (see
 * docs/performance.md for the measurements behind this value).
 */
const ZLIB_CHUNK = 4 << 20;

function corrupt(format: string, display: string, why: string): BtyError {
  return new BtyError(
    'BTY_ERR_DECOMPRESS',
    `the ${format} data of ${display} is corrupt or truncated: ${why}`,
    { details: { format } },
  );
}

/** Null for raw images. qcow2 is not streamable and never reaches here. */
export function createDecompressor(format: ImageFormat, display: string): Duplex | null {
  switch (format) {
    case 'img':
    case 'qcow2':
      return null;
    case 'img.gz':
      return zlib.createGunzip({ chunkSize: ZLIB_CHUNK });
    case 'img.zst':
      // Not Node's zstd stream: it stops after the first frame, and an image made by pzstd or
      // by concatenating files has several. The zstd program reads them all; its default
      // memory limit is the same 128 MiB window the in-place decoder accepts.
      return programStage('zstd', ['--decompress', '--stdout', '--quiet'], {
        debianPackage: 'zstd',
        onFailure: (exit, stderr) => corrupt('zstd', display, stderr || `zstd exited with ${exit}`),
      });
    case 'img.xz':
      return programStage('xz', ['--decompress', '--stdout', '--threads=0'], {
        debianPackage: 'xz-utils',
        onFailure: (exit, stderr) => corrupt('xz', display, stderr || `xz exited with ${exit}`),
      });
    case 'img.bz2':
      return programStage('bzip2', ['--decompress', '--stdout'], {
        debianPackage: 'bzip2',
        onFailure: (exit, stderr) =>
          corrupt('bzip2', display, stderr || `bzip2 exited with ${exit}`),
      });
  }
}

/** Node's zlib errors carry codes like Z_DATA_ERROR, Z_BUF_ERROR or ZSTD_error_*. */
function isZlibError(err: unknown): err is NodeJS.ErrnoException {
  const code = (err as NodeJS.ErrnoException | null)?.code;
  return typeof code === 'string' && (code.startsWith('Z_') || code.startsWith('ZSTD_'));
}

/** Gives a zlib failure the operator's words; other errors pass through unchanged. */
export function explainDecompressError(
  err: unknown,
  format: ImageFormat,
  display: string,
): unknown {
  if (!isZlibError(err)) return err;
  if (err.code === 'ZSTD_error_frameParameter_windowTooLarge') {
    return new BtyError(
      'BTY_ERR_DECOMPRESS',
      `${display} was compressed with a zstd window larger than ${2 ** (ZSTD_WINDOW_LOG_MAX - 20)} MiB ` +
        '(zstd --long=28 or more), which needs too much memory to stream',
      { hint: 'Recompress it with `zstd --long=27` or less (or without --long) and flash again.' },
    );
  }
  return corrupt(format === 'img.zst' ? 'zstd' : 'gzip', display, err.message);
}
