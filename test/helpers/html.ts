/**
 * Reading rendered pages in tests without a DOM: entity decoding, the text of an element by id,
 * and a form's hidden fields as a browser would post them.
 */

/** The entities the server-side renderer produces, back to text. */
export function decodeEntities(text: string): string {
  return text
    .replaceAll('&lt;', '<')
    .replaceAll('&gt;', '>')
    .replaceAll('&quot;', '"')
    .replaceAll('&#39;', "'")
    .replaceAll('&amp;', '&');
}

/** The text of the element with this id: tags stripped, whitespace collapsed, entities decoded. */
export function textOfId(html: string, id: string): string {
  const start = html.indexOf(`id="${id}"`);
  if (start < 0) return '';
  const open = html.lastIndexOf('<', start);
  const tag = /^<([a-z0-9]+)/.exec(html.slice(open))![1]!;
  // Same-tag nesting is counted, so a <div> inside the element does not end it early.
  const re = new RegExp(`<${tag}[\\s>]|</${tag}>`, 'g');
  re.lastIndex = open + 1;
  let depth = 1;
  let end = html.length;
  for (let m = re.exec(html); m; m = re.exec(html)) {
    depth += m[0].startsWith('</') ? -1 : 1;
    if (depth === 0) {
      end = m.index;
      break;
    }
  }
  return decodeEntities(
    html
      .slice(open, end)
      .replace(/<[^>]+>/g, ' ')
      .replace(/\s+/g, ' ')
      .trim(),
  );
}

/** The hidden inputs of `<form id=…>` as the browser would post them. */
export function hiddenFields(html: string, formId: string): Record<string, string> {
  const form = new RegExp(`<form id="${formId}"[\\s\\S]*?</form>`).exec(html)?.[0] ?? '';
  const fields: Record<string, string> = {};
  for (const input of form.match(/<input type="hidden"[^>]*>/g) ?? []) {
    const name = /name="([^"]*)"/.exec(input)?.[1];
    if (name) fields[name] = decodeEntities(/value="([^"]*)"/.exec(input)?.[1] ?? '');
  }
  return fields;
}
