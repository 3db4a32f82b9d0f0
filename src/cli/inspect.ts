/** `bty inspect IMAGE`: format (name and content), sizes, architecture hint, published digest. */
import { EXIT } from '../core/errors.ts';
import { inspectImage, type ImageInspection } from '../flash/inspect.ts';
import { action, formatOption, type Register } from './command.ts';
import { formatBytes, printJson } from './output.ts';

function describe(r: ImageInspection): string {
  const rows: Array<[string, string]> = [
    ['image', r.source],
    ['format', r.format ? `${r.format} (from the ${r.format_from})` : 'unknown'],
    ['content', r.content],
    [
      'size',
      r.size_bytes === null ? 'unknown' : `${formatBytes(r.size_bytes)} (${r.size_bytes} bytes)`,
    ],
    [
      'on disk',
      r.virtual_size_bytes === null
        ? 'unknown (the format does not record it)'
        : `${formatBytes(r.virtual_size_bytes)} (${r.virtual_size_bytes} bytes)`,
    ],
    ['arch', r.arch ?? 'unknown'],
    [
      'sha256',
      r.sha256 ? `${r.sha256} (${r.resolved ? 'layer digest' : 'sidecar'})` : 'none published',
    ],
  ];
  if (r.resolved) {
    const v = r.resolved;
    rows.splice(1, 0, ['layer', `${String(v.digest)}${v.title ? ` (${String(v.title)})` : ''}`]);
    if (v.platform) rows.splice(2, 0, ['platform', String(v.platform)]);
    if (v.manifest_digest) rows.push(['manifest', String(v.manifest_digest)]);
  }
  const lines = rows.map(([k, v]) => `${k.padEnd(8)} ${v}`);
  for (const p of r.problems) lines.push(`problem  ${p.message} [${p.code}]`);
  return lines.join('\n') + '\n';
}

export const registerInspect: Register = (program, io, setExit) => {
  program
    .command('inspect')
    .description('show what an image is: format, sizes, architecture, published sha256')
    .argument('<image>', 'local path, file://, http(s):// URL or oras:// reference')
    .addOption(formatOption())
    .option('--platform <os/arch>', 'for a multi-platform oras:// index (default: this machine)')
    .option('--json', 'print JSON')
    .action(
      action(
        io,
        setExit,
        (args) => Boolean((args[1] as { json?: boolean } | undefined)?.json),
        async (image: string, opts: { json?: boolean; format?: string; platform?: string }) => {
          const r = await inspectImage(image, {
            ...(opts.format ? { format: opts.format } : {}),
            ...(opts.platform ? { platform: opts.platform } : {}),
          });
          if (opts.json) printJson(io, r);
          else io.out(describe(r));
          // An image bty would refuse is reported with its problem's exit status.
          return r.problems.length === 0 ? EXIT.ok : EXIT.usage;
        },
      ),
    );
};
