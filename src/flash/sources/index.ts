/**
 * Turns what the operator typed into an ImageSource: a local path, `file://`, `http(s)://`, or
 * a scheme registered by another module (the `oras://` resolver plugs in here).
 */
import { fileURLToPath } from 'node:url';
import { BtyError } from '../../core/errors.ts';
import { FileSource } from './file.ts';
import { HttpSource, type HttpSourceOptions } from './http.ts';
import type { ImageSource } from './source.ts';

export type { ImageSource } from './source.ts';
export { FileSource } from './file.ts';
export { HttpSource, type HttpSourceOptions } from './http.ts';

export interface OpenSourceOptions {
  http?: HttpSourceOptions;
  /** For an OCI index: the platform to pick (`os/arch[/variant]`). */
  platform?: string;
}

export type SourceOpener = (src: string, options: OpenSourceOptions) => Promise<ImageSource>;

const extraSchemes = new Map<string, SourceOpener>();

/** Lets another module (e.g. the OCI resolver) serve a URL scheme. */
export function registerSourceScheme(scheme: string, opener: SourceOpener): void {
  extraSchemes.set(scheme.toLowerCase(), opener);
}

/**
 * The scheme of an image source, or null for a local path. Only `scheme://` counts, unlike the
 * catalog's Python-compatible `urlScheme`: an image file named `debian:13.img` is a path
 * (the catalog rule, kept for upstream parity, would read it as scheme `debian`).
 */
export function sourceScheme(src: string): string | null {
  const m = /^([a-z][a-z0-9+.-]*):\/\//i.exec(src);
  return m ? m[1]!.toLowerCase() : null;
}

export async function openImageSource(
  src: string,
  options: OpenSourceOptions = {},
): Promise<ImageSource> {
  const scheme = sourceScheme(src);
  if (scheme === null) return FileSource.open(src);
  if (scheme === 'file') {
    let path: string;
    try {
      path = fileURLToPath(src);
    } catch (err) {
      throw new BtyError('BTY_ERR_BAD_INPUT', `not a usable file:// URL: ${src} (${String(err)})`);
    }
    return FileSource.open(path, src);
  }
  if (scheme === 'http' || scheme === 'https') {
    try {
      new URL(src);
    } catch {
      throw new BtyError('BTY_ERR_BAD_INPUT', `not a valid URL: ${src}`);
    }
    return HttpSource.probe(src, options.http);
  }
  const opener = extraSchemes.get(scheme);
  if (opener) return opener(src, options);
  if (scheme === 'oras') {
    throw new BtyError(
      'BTY_ERR_SOURCE_SCHEME',
      `oras:// support is not loaded in this program: ${src}`,
      { hint: "Import 'bty-lab/oras' (or the package root) once before flashing." },
    );
  }
  throw new BtyError(
    'BTY_ERR_SOURCE_SCHEME',
    `image source must be a local path or a file://, http:// or https:// URL; got scheme '${scheme}' in '${src}'`,
  );
}

/** `--platform` picks from an OCI index: for anything else it would be silently ignored. */
export function assertPlatformApplies(source: string, platform: string | null | undefined): void {
  if (platform && sourceScheme(source) !== 'oras') {
    throw new BtyError(
      'BTY_ERR_BAD_INPUT',
      `--platform applies to oras:// references only; ${source} is not one`,
      { hint: 'Leave out --platform, or name the image by its oras:// reference.' },
    );
  }
}
