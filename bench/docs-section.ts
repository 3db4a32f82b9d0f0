/**
 * The one way the benchmarks write their figures into docs/performance.md: each owns a section
 * between two marker comments and replaces only that, leaving the prose around it alone. The
 * file is formatted as `make lint` expects, so a regenerated doc passes the Prettier check.
 */
import { readFile, writeFile } from 'node:fs/promises';
import { format as prettierFormat, resolveConfig } from 'prettier';

export interface DocsSection {
  begin: string;
  end: string;
  /** Named in the error when the markers are missing, e.g. "TFTP". */
  label: string;
  /** The file's text when it does not exist yet (default: it must exist). */
  skeleton?: string;
}

/** Replaces the text between the section's markers in `path` with `markdown`. */
export async function replaceDocsSection(
  path: string,
  section: DocsSection,
  markdown: string,
): Promise<void> {
  const current = await readFile(path, 'utf8').catch((err: unknown) => {
    if (section.skeleton !== undefined) return section.skeleton;
    throw err;
  });
  const begin = current.indexOf(section.begin);
  const end = current.indexOf(section.end);
  if (begin === -1 || end < begin) {
    throw new Error(
      `${path} has no generated ${section.label} section; put the lines\n${section.begin}\n${section.end}\nwhere the figures go`,
    );
  }
  const next =
    current.slice(0, begin + section.begin.length) +
    '\n\n' +
    markdown.trimEnd() +
    '\n\n' +
    current.slice(end);
  const config = await resolveConfig(path);
  await writeFile(path, await prettierFormat(next, { ...config, filepath: path }));
}
