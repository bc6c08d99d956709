process SESSION_SECRET {
    // --mode local only: a fresh pre-shared session secret for the k local
    // sites (32 random bytes, hex, mode 600). Never published. In site mode
    // the sites exchange a secret out of band and pass --secret_file.
    tag "session"
    label 'process_single'

    output:
    path "session.key", emit: secret

    script:
    """
    umask 077
    python3 -c 'import secrets; print(secrets.token_hex(32))' > session.key
    chmod 600 session.key
    """

    stub:
    """
    umask 077
    python3 -c 'import secrets; print(secrets.token_hex(32))' > session.key
    chmod 600 session.key
    """
}
