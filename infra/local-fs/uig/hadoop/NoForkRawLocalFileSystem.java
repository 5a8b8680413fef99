package uig.hadoop;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.attribute.PosixFilePermission;
import java.util.EnumSet;
import java.util.Set;
import org.apache.hadoop.fs.FileStatus;
import org.apache.hadoop.fs.Path;
import org.apache.hadoop.fs.RawLocalFileSystem;
import org.apache.hadoop.fs.permission.FsAction;
import org.apache.hadoop.fs.permission.FsPermission;

/**
 * Hadoop's local file system, minus its two process forks per file.
 *
 * <p>Without Hadoop's native library (pip's pyspark has none), RawLocalFileSystem sets the mode
 * of every file it creates by running {@code chmod}, and Delta's log store checks both ends of
 * every commit's rename by running {@code readlink}. Each such process costs 15-20 ms from a
 * Spark driver's JVM: about 50 of them in a one-user refresh, hundreds in an ingest. Here the
 * same two things are done through java.nio, in-process; everything else is Hadoop's own code.
 */
public class NoForkRawLocalFileSystem extends RawLocalFileSystem {

  /** The same mode {@code chmod} would set; a sticky bit (which java.nio cannot set) still goes to Hadoop's. */
  @Override
  public void setPermission(Path p, FsPermission permission) throws IOException {
    if (permission.getStickyBit()) {
      super.setPermission(p, permission);
      return;
    }
    Files.setPosixFilePermissions(pathToFile(p).toPath(), posix(permission));
  }

  /** A file or folder that is not a symbolic link is its own status; links keep Hadoop's path. */
  @Override
  public FileStatus getFileLinkStatus(Path f) throws IOException {
    if (Files.isSymbolicLink(pathToFile(f).toPath())) {
      return super.getFileLinkStatus(f);
    }
    return getFileStatus(f);
  }

  static Set<PosixFilePermission> posix(FsPermission permission) {
    Set<PosixFilePermission> modes = EnumSet.noneOf(PosixFilePermission.class);
    add(modes, permission.getUserAction(),
        PosixFilePermission.OWNER_READ, PosixFilePermission.OWNER_WRITE, PosixFilePermission.OWNER_EXECUTE);
    add(modes, permission.getGroupAction(),
        PosixFilePermission.GROUP_READ, PosixFilePermission.GROUP_WRITE, PosixFilePermission.GROUP_EXECUTE);
    add(modes, permission.getOtherAction(),
        PosixFilePermission.OTHERS_READ, PosixFilePermission.OTHERS_WRITE, PosixFilePermission.OTHERS_EXECUTE);
    return modes;
  }

  private static void add(Set<PosixFilePermission> modes, FsAction action,
      PosixFilePermission read, PosixFilePermission write, PosixFilePermission execute) {
    if (action.implies(FsAction.READ)) modes.add(read);
    if (action.implies(FsAction.WRITE)) modes.add(write);
    if (action.implies(FsAction.EXECUTE)) modes.add(execute);
  }
}
