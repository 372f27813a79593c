/** `granular report ... | head` and `sweep --dry-run | head` end quietly when the reader stops reading. */
export function exitQuietlyOnEpipe(): void {
  process.stdout.on('error', (e: NodeJS.ErrnoException) => {
    if (e.code === 'EPIPE') process.exit(0);
    throw e;
  });
}
