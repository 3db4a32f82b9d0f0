/**
 * The machine page's hardware summary, read from the `lshw -json` blob the live environment
 * posted: CPUs, memory, network cards and disks.
 *
 * lshw's JSON has changed shape over the years (one root object, or an array of roots in newer
 * releases; `logicalname` a string or a list; `configuration` values as strings) and the blob
 * comes from the machine, so nothing here trusts it: every field is type-checked, the tree is
 * walked without recursion with a node budget, and odd input gives an emptier summary, never an
 * exception.
 */

export interface CpuSummary {
  product: string;
  vendor: string | null;
  cores: number | null;
  threads: number | null;
}

export interface NicSummary {
  logicalNames: string[];
  /** Lower-case, colon-separated, as machine records are keyed. */
  mac: string | null;
  product: string | null;
  vendor: string | null;
}

export interface DiskSummary {
  logicalName: string | null;
  product: string | null;
  vendor: string | null;
  serial: string | null;
  sizeBytes: number | null;
}

export interface HardwareSummary {
  system: { product: string | null; vendor: string | null; serial: string | null } | null;
  cpus: CpuSummary[];
  memory: { totalBytes: number | null; modules: number };
  nics: NicSummary[];
  disks: DiskSummary[];
}

/** More nodes than any real machine has (a big server reports a few thousand). */
const MAX_NODES = 50_000;

type Node = Record<string, unknown>;

function isNode(value: unknown): value is Node {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

function text(value: unknown): string | null {
  if (typeof value === 'string') {
    const t = value.trim();
    return t === '' ? null : t;
  }
  if (typeof value === 'number' && Number.isFinite(value)) return String(value);
  return null;
}

/** A non-negative whole number from a number or a numeric string ("8"). */
function count(value: unknown): number | null {
  const n = typeof value === 'string' && /^\s*\d+\s*$/.test(value) ? Number(value) : value;
  return typeof n === 'number' && Number.isSafeInteger(n) && n >= 0 ? n : null;
}

/** A size in bytes; lshw states the unit in `units` and only bytes are sizes we can add up. */
function bytes(node: Node): number | null {
  const units = text(node.units);
  if (units !== null && units !== 'bytes') return null;
  const n = count(node.size);
  return n !== null && n > 0 ? n : null;
}

function logicalNames(value: unknown): string[] {
  // Names are strings: a number there is not a device name.
  const list: unknown[] = Array.isArray(value) ? value : [value];
  return list
    .map((v) => (typeof v === 'string' ? text(v) : null))
    .filter((v): v is string => v !== null);
}

function configuration(node: Node): Node {
  return isNode(node.configuration) ? node.configuration : {};
}

const MAC = /^([0-9a-f]{2})([:-][0-9a-f]{2}){5}$/;

function macOf(value: unknown): string | null {
  const t = text(value)?.toLowerCase() ?? null;
  return t !== null && MAC.test(t) ? t.replaceAll('-', ':') : null;
}

/** Every node of the tree, parents before children, at most MAX_NODES of them. */
function nodesOf(root: unknown): Node[] {
  const out: Node[] = [];
  const stack: unknown[] = [root];
  while (stack.length > 0 && out.length < MAX_NODES) {
    const value = stack.pop();
    if (Array.isArray(value)) {
      for (let i = value.length - 1; i >= 0; i--) stack.push(value[i]);
      continue;
    }
    if (!isNode(value)) continue;
    out.push(value);
    const children = value.children;
    if (Array.isArray(children)) {
      for (let i = children.length - 1; i >= 0; i--) stack.push(children[i]);
    } else if (isNode(children)) {
      stack.push(children);
    }
  }
  return out;
}

/** A node lshw lists but that is not there: an empty CPU socket or memory slot. */
function absent(node: Node): boolean {
  return node.disabled === true || node.claimed === false;
}

/** The hardware summary of a parsed `lshw -json` document (any JSON value is accepted). */
export function summariseLshw(lshw: unknown): HardwareSummary {
  const nodes = nodesOf(lshw);
  const summary: HardwareSummary = {
    system: null,
    cpus: [],
    memory: { totalBytes: null, modules: 0 },
    nics: [],
    disks: [],
  };
  let bankBytes = 0;
  let containerBytes: number | null = null;
  for (const node of nodes) {
    const cls = text(node.class);
    const id = text(node.id) ?? '';
    switch (cls) {
      case 'system':
        summary.system ??= {
          product: text(node.product),
          vendor: text(node.vendor),
          serial: text(node.serial),
        };
        break;
      case 'processor': {
        if (absent(node)) break;
        const product = text(node.product) ?? text(node.description);
        if (product === null) break;
        const config = configuration(node);
        summary.cpus.push({
          product,
          vendor: text(node.vendor),
          cores: count(config.cores) ?? count(config.enabledcores),
          threads: count(config.threads),
        });
        break;
      }
      case 'memory': {
        const size = bytes(node);
        if (id.startsWith('bank')) {
          if (size !== null) {
            bankBytes += size;
            summary.memory.modules += 1;
          }
        } else if (containerBytes === null && size !== null && isSystemMemory(node, id)) {
          containerBytes = size;
        }
        break;
      }
      case 'network':
        summary.nics.push({
          logicalNames: logicalNames(node.logicalname),
          mac: macOf(node.serial),
          product: text(node.product) ?? text(node.description),
          vendor: text(node.vendor),
        });
        break;
      case 'disk': {
        const names = logicalNames(node.logicalname);
        summary.disks.push({
          logicalName: names.find((n) => n.startsWith('/dev/')) ?? names[0] ?? null,
          product: text(node.product) ?? text(node.description),
          vendor: text(node.vendor),
          serial: text(node.serial),
          sizeBytes: bytes(node),
        });
        break;
      }
    }
  }
  // The modules add up exactly; the container's own size is the fallback when lshw saw no banks.
  summary.memory.totalBytes = summary.memory.modules > 0 ? bankBytes : containerBytes;
  return summary;
}

/** The "System Memory" container, not a cache or a firmware ROM (also class `memory`). */
function isSystemMemory(node: Node, id: string): boolean {
  if (id === 'memory' || id.startsWith('memory:')) return true;
  return (text(node.description) ?? '').toLowerCase() === 'system memory';
}

/** The summary of a stored blob (JSON text); null when it is not JSON. */
export function summariseLshwText(blob: string | null): HardwareSummary | null {
  if (blob === null) return null;
  try {
    return summariseLshw(JSON.parse(blob));
  } catch {
    return null;
  }
}
